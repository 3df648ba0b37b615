from kubescrape.cli import main

main()
