"""What each notebook does, one module per notebook, so the notebooks stay thin and tested."""
