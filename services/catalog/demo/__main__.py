from services.catalog.demo.load import main

main()
