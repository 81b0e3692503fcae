from pages._shared import planned
planned('import_data', 'Coming in this release.')
