"""Data: IDX files, FashionMNIST, the catalog of named sets, downloads, the user's own data,
preparation, EDA."""
