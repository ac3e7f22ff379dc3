"""Screenshots of the localet boxes in Scipion's GUI (not part of the test run).

Builds a small project (simulated IMOD folder -> import -> localet reconstruct with odd/even ->
FSC validation), opens the project window and each localet protocol's form under an X display,
and saves PNGs next to this script. Needs an X server: run it under Xvfb, e.g.

    Xvfb :99 -screen 0 1600x1000x24 &  DISPLAY=:99 python docs/scipion/make_screenshots.py

and ImageMagick's `import` for the captures.
"""
import importlib.util
import os
import subprocess
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))


def _scipion_env():
    """localet_scipion/tests/scipion_env.py, loaded from its path: importing it as a module of
    localet_scipion would import pyworkflow before the environment is set."""
    spec = importlib.util.spec_from_file_location(
        "scipion_env", os.path.join(REPO, "localet_scipion", "tests", "scipion_env.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


ROOT = _scipion_env().setup()  # before the first pyworkflow import

from pyworkflow.project import Manager  # noqa: E402

from localet_scipion.constants import METHOD_WBP  # noqa: E402
from localet_scipion.protocols import (  # noqa: E402
    ProtLocaletFsc,
    ProtLocaletImportModel,
    ProtLocaletImportTs,
    ProtLocaletReconstruct,
    ProtLocaletTrain,
)
from localet_scipion.tests.simulate import rotation_xf, write_series  # noqa: E402


def capture(name, delay=1.5, window="root"):
    """Save the X window ``window`` (an id, or the whole screen) as docs/scipion/NAME.png."""
    time.sleep(delay)
    path = os.path.join(HERE, f"{name}.png")
    subprocess.run(["import", "-window", str(window), path], check=True)
    print("wrote", path)


def build_project():
    data = os.path.join(ROOT, "imod")
    write_series(data, "TS_01", xf=rotation_xf(21), seed=1)
    write_series(data, "TS_02", seed=2)
    project = Manager().createProject("localet_tomo")
    os.chdir(project.getPath())  # the project works with paths relative to its folder
    imp = project.newProtocol(ProtLocaletImportTs, filesPath=data, filesPattern="*.st",
                              excludedViews="TS_02: 1", dosePerTilt=3.0)
    project.launchProtocol(imp, wait=True)
    rec = project.newProtocol(ProtLocaletReconstruct, method=METHOD_WBP, thickness=16,
                              doOddEven=True, useGpu=False)
    rec.inputSetOfTiltSeries.set(imp)
    rec.inputSetOfTiltSeries.setExtended("TiltSeries")
    project.launchProtocol(rec, wait=True)
    fsc = project.newProtocol(ProtLocaletFsc, mode=0)
    fsc.inputTomograms.set(rec)
    fsc.inputTomograms.setExtended("Tomograms")
    project.launchProtocol(fsc, wait=True)
    for prot in (imp, rec, fsc):
        prot = project.getProtocol(prot.getObjId())
        assert prot.isFinished(), f"{prot.getRunName()} did not finish: {prot.getErrorMessage()}"
    return project, imp, rec, fsc


def _open_tree(view, labels):
    """Expand the protocol-tree sections whose text is in ``labels`` (to show the localet boxes)."""
    import tkinter.ttk as ttk
    trees = [w for w in vars(view).values() if isinstance(w, ttk.Treeview)]

    def walk(tree, item=""):
        for child in tree.get_children(item):
            text = str(tree.item(child, "text")).strip()
            if text in labels:
                tree.item(child, open=True)
            walk(tree, child)
    for tree in trees:
        walk(tree)


def main():
    project, imp, rec, fsc = build_project()
    project.getSettings().setProtocolView("Tomography")
    project.saveSettings()
    from pyworkflow.gui.form import FormWindow
    from pyworkflow.gui.project import ProjectWindow  # before gui.form (circular imports)
    window = ProjectWindow(project.getPath())
    root = window.root
    forms = [(ProtLocaletReconstruct, "form_reconstruct", rec),
             (ProtLocaletTrain, "form_train", None),
             (ProtLocaletFsc, "form_fsc", fsc),
             (ProtLocaletImportModel, "form_import_model", None),
             (ProtLocaletImportTs, "form_import_ts", imp)]

    def project_window():
        view = window.getViewWidget()
        _open_tree(view, {"Tomograms", "Tomogram Reconstruction", "Quality Analysis", "Denoise"})
        view._selectItemProtocol(project.getProtocol(rec.getObjId()))
        root.update()
        capture("project_window", 1.0, root.wm_frame())
        root.after(500, open_form, 0)

    def open_form(i):
        if i == len(forms):
            root.after(200, root.quit)
            return
        cls, name, existing = forms[i]
        prot = (project.copyProtocol(project.getProtocol(existing.getObjId())) if existing
                else project.newProtocol(cls))
        w = FormWindow(f"Protocol Run: {cls.__name__}", prot, lambda *a, **k: None, window)
        w.adjustSize()
        w.root.deiconify()
        w.root.geometry("+60+40")

        def shoot():
            w.root.update()
            capture(name, 0.5, w.root.wm_frame())
            w.close()
            root.after(300, open_form, i + 1)
        root.after(2500, shoot)

    root.after(3000, project_window)
    window.show()


if __name__ == "__main__":
    main()
