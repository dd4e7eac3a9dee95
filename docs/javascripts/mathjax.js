// MathJax 3 set-up for pymdownx.arithmatex (generic mode), which wraps math in \( \) and \[ \].
window.MathJax = {
  loader: {
    // textmacros: \_ and friends inside \text{...}, e.g. \text{initial\_accumulator\_value}.
    load: ["[tex]/textmacros"],
  },
  tex: {
    packages: { "[+]": ["textmacros"] },
    inlineMath: [["\\(", "\\)"]],
    displayMath: [["\\[", "\\]"]],
    processEscapes: true,
    processEnvironments: true,
  },
  options: {
    ignoreHtmlClass: ".*|",
    processHtmlClass: "arithmatex",
  },
};

// Material's instant navigation swaps pages without a reload: typeset each new page.
document$.subscribe(() => {
  MathJax.startup.output.clearCache();
  MathJax.typesetClear();
  MathJax.texReset();
  MathJax.typesetPromise();
});
