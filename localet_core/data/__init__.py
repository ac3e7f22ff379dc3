"""Package data of localet_core: the simulator's templates (templates.npz/.json) and models/."""
