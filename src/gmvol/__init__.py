"""gmvol: regress the 68 Desikan-Killiany cortical gray-matter volumes directly from a T1 MRI."""

__version__ = "0.1.0"
