// Stands in for MathJax, which mkdocs-jupyter would otherwise load from a CDN: the lessons use no TeX.
