from pages._shared import planned
planned('density', 'Coming in this release.')
