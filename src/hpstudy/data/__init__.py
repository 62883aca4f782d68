"""Data: IDX files, the catalog of named sets, downloads, the user's own data, preparation, EDA."""
