"""gmvol: regress the 68 Desikan-Killiany cortical gray-matter volumes directly from a T1 MRI."""
