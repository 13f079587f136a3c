import sys

from llmgan.cli import main

sys.exit(main())
