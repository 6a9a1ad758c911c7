import sys

from cluster.local import main

sys.exit(main())
