"""The user's table: `reading` files, the `contract` (pandera), the long table of series (`panel`), `auto` choices.

Imports `config`, `features` (a transform's domain, the rows a window needs) and the foundation modules.
"""
