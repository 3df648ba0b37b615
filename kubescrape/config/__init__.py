"""Configuration: pydantic models, and the Categraf-layout importer (categraf.py)."""
