"""Statistics: intervals over seeds (`intervals`), Holm's adjustment (`multiplicity`), the verdict
rules (`verdict`), equivalence within a margin (`equivalence`: TOST) and result tables
(`tables`); pure numbers, no torch."""
