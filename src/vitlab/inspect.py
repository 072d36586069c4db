"""`vitlab.inspect`: the public name of `vitlab.inspection` (looking inside a ViT, paper Section 4.5).

Importing it gives the `vitlab.inspection` package itself, so both names share every function.
"""

import sys

from vitlab import inspection

sys.modules[__name__] = inspection
