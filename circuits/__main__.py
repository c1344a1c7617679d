import sys

from circuits.run import main

sys.exit(main())
