from broker.serving.command import main

main()
