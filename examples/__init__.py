"""Example applications built on tether."""
