from ssp.cli import main

raise SystemExit(main())
