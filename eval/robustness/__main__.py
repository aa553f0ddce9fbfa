"""`python -m eval.robustness`."""
from eval.robustness.run import main

main()
