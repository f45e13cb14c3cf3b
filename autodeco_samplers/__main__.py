import sys

from autodeco_samplers.cli import main

sys.exit(main())
