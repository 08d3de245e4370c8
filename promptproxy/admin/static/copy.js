// Copy buttons: <button class="pp-copy" data-copy="text">, or data-copy-from="<id>" to
// copy what that element holds now (an input's value, else its text). The clipboard API
// needs a secure context (https or localhost); elsewhere a hidden textarea and execCommand.
(function () {
  "use strict";

  function fallbackCopy(text) {
    var area = document.createElement("textarea");
    area.value = text;
    area.setAttribute("readonly", "");
    area.style.position = "fixed";
    area.style.opacity = "0";
    document.body.appendChild(area);
    area.select();
    var copied = false;
    try { copied = document.execCommand("copy"); } catch (e) { copied = false; }
    document.body.removeChild(area);
    return copied ? Promise.resolve() : Promise.reject(new Error("copy refused"));
  }

  function copy(text) {
    if (navigator.clipboard && window.isSecureContext) {
      return navigator.clipboard.writeText(text).catch(function () { return fallbackCopy(text); });
    }
    return fallbackCopy(text);
  }

  document.addEventListener("click", function (event) {
    var button = event.target.closest(".pp-copy");
    if (!button) { return; }
    event.preventDefault();
    var label = button.textContent;
    var source = button.hasAttribute("data-copy-from") && document.getElementById(button.getAttribute("data-copy-from"));
    var text = source ? (source.tagName === "INPUT" ? source.value : source.textContent) : button.getAttribute("data-copy");
    copy(text).then(function () {
      button.textContent = "Copied";
    }, function () {
      button.textContent = "Select and copy";
    }).then(function () {
      setTimeout(function () { button.textContent = label; }, 1500);
    });
  });
})();
