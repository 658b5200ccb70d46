"""jettag: jet tagging with transformers, from particles to trained and evaluated taggers.

The package is laid out the way the work flows:

- ``jettag.physics``   kinematics, pair features (shared by data and models)
- ``jettag.data``      the canonical jet store, benchmark-format readers, features, batching, generation
- ``jettag.models``    shared layers, one file per model, and the ``create_model`` registry
- ``jettag.train``     the training loop, checkpoints and recipes
- ``jettag.evaluate``  metrics, tables and plots
- ``jettag.cli``       the ``jettag`` command
"""

__version__ = "0.1.0"
