from pages._shared import planned
planned('complement', 'Coming in this release.')
