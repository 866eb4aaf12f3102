from erqpy.cli import main

main()
