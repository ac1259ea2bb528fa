"""From a hospital's DICOM export to a site folder in the ``flame`` layout.

The modules follow the path a site's IT team runs: ``headers`` reads what each
file is without its pixels; ``sequences`` says which series is T1, T1ce, T2 or
FLAIR; ``volume`` stacks a series into a 3-D image and checks its geometry;
``registration`` brings every sequence and timepoint onto the baseline T1ce and
extracts the brain; ``segmentation`` reads and writes DICOM-SEG; ``deidentify``
replaces identities and dates by pseudonyms and intervals; ``importer`` runs
them and writes the site folder in one step; ``export`` writes a synthetic site
as DICOM so the whole path can be checked against known truth.
"""
