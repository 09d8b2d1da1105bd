from modelsched.zoo import main

raise SystemExit(main())
