import sys

from lawgpt_trainer.cli import main

sys.exit(main())
