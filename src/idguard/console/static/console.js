// The console's only script besides htmx: no inline handlers anywhere (the CSP forbids them).
document.addEventListener("click", function (event) {
  var target = event.target.closest("[data-print]");
  if (target) {
    event.preventDefault();
    window.print();
  }
  var confirmer = event.target.closest("[data-confirm]");
  if (confirmer && !window.confirm(confirmer.getAttribute("data-confirm"))) {
    event.preventDefault();
  }
});

// Upload progress of a form that names its <progress> element in data-progress (htmx requests).
document.addEventListener("htmx:xhr:progress", function (event) {
  var form = event.target.closest("[data-progress]");
  var bar = form && document.getElementById(form.getAttribute("data-progress"));
  if (bar && event.detail.lengthComputable) {
    bar.value = Math.round((event.detail.loaded / event.detail.total) * 100);
  }
});
document.addEventListener("htmx:afterRequest", function (event) {
  var form = event.target.closest("[data-progress]");
  var bar = form && document.getElementById(form.getAttribute("data-progress"));
  if (bar) { bar.value = 100; }
});

// A submit button that downloads a file (data-plain-submit) is sent as a plain form, not by htmx.
document.addEventListener("htmx:confirm", function (event) {
  var trigger = event.detail.triggeringEvent;
  var submitter = trigger && trigger.submitter;
  if (submitter && submitter.hasAttribute("data-plain-submit")) {
    event.preventDefault();
    var form = event.target;
    var hidden = document.createElement("input");
    hidden.type = "hidden";
    hidden.name = submitter.name;
    hidden.value = submitter.value;
    form.appendChild(hidden);
    HTMLFormElement.prototype.submit.call(form); // no submit event: htmx stays out
    form.removeChild(hidden);
  }
});
