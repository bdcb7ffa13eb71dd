"""dermgen: distributed synthetic skin-lesion dataset generation.

Stages (plan, generate, filter, write, load) are plain Python; ``dermgen.runner`` composes them on Ray.
"""

__version__ = "0.1.0"
