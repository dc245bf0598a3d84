from periscope_addons.worker import main

main()
