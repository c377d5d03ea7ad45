from broker.serve import main

main()
