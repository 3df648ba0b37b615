"""``python -m kubescrape``: the same command line as the ``kubescrape`` script."""

from kubescrape.cli import main

if __name__ == "__main__":
    main()
