from services.cart.server import main

main()
