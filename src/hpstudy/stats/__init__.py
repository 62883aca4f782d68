"""Statistics: intervals over seeds, paired tests, the verdict rules; pure numbers, no torch."""
