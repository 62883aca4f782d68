"""Statistics: intervals over seeds (`intervals`), Holm's adjustment (`multiplicity`), the verdict
rules (`verdict`) and result tables (`tables`); pure numbers, no torch."""
