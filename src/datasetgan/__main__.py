from datasetgan.cli import main

main()
