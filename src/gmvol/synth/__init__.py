"""The embedded default cohort: synthetic subjects warped from real anatomy (MNI152 + DK atlas)."""
