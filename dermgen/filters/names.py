"""Names of the filter scores; the Parquet schema has one float column per name under ``scores``.

Kept free of heavy imports so the schema module can use it.
"""

SCORE_NAMES: tuple[str, ...] = (
    "ink",  # fraction of saturated purple/blue marker-stroke pixels
    "blur",  # 1 - normalised sharpness of the sharpest edges; high = blurry
    "contrast",  # luminance contrast (p99 - p1 of Lab L, 0..1); low = washed out or crushed
    "tint",  # colour-cast strength; high = extreme tint
    "clipped",  # fraction of pixels in clipped shadows or highlights
    "hair",  # hair density from black-hat morphology
    "ruler",  # ruler / scale-bar dominance
    "lesion_area",  # segmented lesion area as a fraction of the frame
    "lesion_offcentre",  # distance of the lesion centroid from the centre, 0..1
    "off_domain",  # 1 = not a dermoscopic skin image
    "duplicate",  # similarity to the closest earlier kept image of the run, 0..1
    "memorisation",  # similarity to the closest reference (fine-tuning) image, 0..1
    "clip",  # optional CLIP image-text similarity
    "ita",  # skin tone: Individual Typology Angle of the skin around the lesion, degrees (-90..90)
    "smear",  # largest patch of vivid pure blue as a fraction of the frame (a blue smear over the lesion)
)

# Scores judged by something other than a threshold: ``ita`` by the skin-tone groups an entry expects.
UNBOUNDED_SCORES: tuple[str, ...] = ("ita",)
