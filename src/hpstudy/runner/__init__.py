"""Running a study: options, devices, the end-to-end run, its status and the benchmark."""
