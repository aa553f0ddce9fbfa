"""`python -m eval.multiscale`: see the package docstring."""
from eval.multiscale.driver import main

if __name__ == '__main__':
  main()
