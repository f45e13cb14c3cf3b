import sys

from autodeco_samplers.frontends.cli import main

sys.exit(main())
