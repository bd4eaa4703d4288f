from forkwise.cli import main

raise SystemExit(main())
