"""The inference engine (:mod:`~pipeline.inference.engine`) and the loader feeding it images."""
