"""The heads as models: their config and official tensor layout, the NumPy heads, the torch
twin and fresh initialisation. No file formats here (those are in :mod:`..io`)."""
