# -*- coding: utf-8 -*-
"""
@article{kishore2025localized,
  title = "Localized Supervised Learning for Cryo-ET Reconstruction",
  author = "Kishore, Vinith and Debarnot, Valentin and Khorashadizadeh, AmirEhsan and Dokmani{\'c}, Ivan",
  journal = "arXiv preprint arXiv:2509.00968",
  year = "2025",
  doi = "10.48550/arXiv.2509.00968",
  url = "https://arxiv.org/abs/2509.00968"
}

@article{kremer1996imod,
  title = "Computer visualization of three-dimensional image data using IMOD",
  author = "Kremer, James R. and Mastronarde, David N. and McIntosh, J. Richard",
  journal = "Journal of Structural Biology",
  volume = "116",
  number = "1",
  pages = "71--76",
  year = "1996",
  doi = "10.1006/jsbi.1996.0013"
}
"""
