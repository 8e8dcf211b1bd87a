import sys

from lawgpt_trainer import distributed
from lawgpt_trainer.cli import main

code = main()
if distributed.launched():
    distributed.exit_rank(code)
sys.exit(code)
