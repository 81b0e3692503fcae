from pages._shared import planned
planned('filters', 'Coming in this release.')
