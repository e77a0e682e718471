"""Training MeLFusion (paper Algorithm 1) with accelerate."""
