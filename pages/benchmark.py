from pages._shared import planned
planned('benchmark', 'Coming in this release.')
