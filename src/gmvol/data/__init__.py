"""Data: FreeSurfer/HCP ingestion, the train/test split, the preprocessing cache and the Dataset."""
