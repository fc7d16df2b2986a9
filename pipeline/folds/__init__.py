"""The folds stage: grouped, stratified folds by car (``splits``), which also gives every other
stage its fold's rows and checks that weights never learnt from the images they are scored on;
its command is ``python -m pipeline.folds``."""
