from tfbound.cli import main

main()
