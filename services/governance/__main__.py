from services.governance.server import main

main()
