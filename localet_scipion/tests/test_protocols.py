"""The Scipion plugin in a real temporary Scipion project, headless and offline.

Simulated IMOD folders (localet_scipion.tests.simulate) are imported with tomo's ProtImportTs and
with the plugin's own import (which attaches .xf, odd/even stacks and excluded views), then run
through the localet boxes; volumes are compared with the `localet` CLI run directly on the same
files. Needs scipion-pyworkflow, scipion-em and scipion-em-tomo (the `scipion` extra).

Run by pytest (``pytest localet_scipion/tests``: the repository's conftest.py sets the Scipion
environment up first, see scipion_env.py) or by Scipion's runner
(``scipion3 tests localet_scipion.tests.test_protocols.TestLocaletScipion``). Plain unittest, so
that Scipion's runner needs no pytest.
"""
import json
import os
import shutil
import subprocess
import sys
import time
import unittest

import mrcfile
import numpy as np
from pyworkflow.tests import BaseTest, setupTestProject

from localet_scipion.constants import METHOD_PRETRAINED, METHOD_TRAINED, METHOD_WBP, MIRROR_CHOICES
from localet_scipion.tests import scipion_env
from localet_scipion.tests.simulate import rotation_xf, write_series

ROOT = scipion_env.setup()  # a no-op (but for the scratch folder) once pyworkflow is configured

THICKNESS = 16
PIXEL = 10.0


def _cli_has(command):
    return subprocess.run([sys.executable, "-m", "localet", command, "--help"],
                          capture_output=True, env=os.environ.copy()).returncode == 0


def _cli(*args):
    subprocess.run([sys.executable, "-m", "localet", *map(str, args), "--device", "cpu"],
                   check=True, capture_output=True, env=os.environ.copy())


def _pretrained_shipped():
    """`localet reconstruct` exists and resolves the shipped pretrained model."""
    if not _cli_has("reconstruct"):
        return False
    try:
        from localet_core.network.modelfile import resolve_model_path
        from localet_scipion.constants import PRETRAINED_MODEL
        resolve_model_path(PRETRAINED_MODEL)
        return True
    except Exception:
        return False


def _read(path):
    return mrcfile.read(path)


class TestLocaletScipion(BaseTest):
    """One project; protocols are launched once and shared by the checks (a few seconds each)."""

    _prots = {}

    @classmethod
    def setUpClass(cls):
        setupTestProject(cls)
        cls.data = os.path.join(ROOT, "sim")
        plain, imod, truth = (os.path.join(cls.data, d) for d in ("plain", "imod", "truth"))
        cls.files = {
            "TS_01": write_series(plain, "TS_01", halves=False, seed=1),
            "TS_02": write_series(plain, "TS_02", halves=False, seed=2),
            "TS_A": write_series(imod, "TS_A", xf=rotation_xf(21), seed=3),
            "TS_B": write_series(imod, "TS_B", seed=4),
            "TS_bad": write_series(imod, "TS_bad", seed=5, corrupt=True),
        }
        os.makedirs(truth)
        for tsId in ("TS_A", "TS_B"):  # references, e.g. what Cryo-CARE + IsoNet would give
            shutil.move(cls.files[tsId]["truth"], os.path.join(truth, f"{tsId}.mrc"))
        cls.plain, cls.imod, cls.truth = plain, imod, truth

    # ------------------------------------------------------------------ shared launches
    @classmethod
    def _run(cls, key, make):
        if key not in cls._prots:
            start = time.perf_counter()
            prot = make()
            cls.launchProtocol(prot)
            print(f"{key}: {time.perf_counter() - start:.1f} s")
            cls._prots[key] = prot
        return cls._prots[key]

    @classmethod
    def importPlain(cls):
        from tomo.protocols import ProtImportTs
        return cls._run("importPlain", lambda: cls.newProtocol(
            ProtImportTs, filesPath=cls.plain, filesPattern="{TS}.st", anglesFrom=2,
            voltage=300, magnification=50000, sphericalAberration=2.7, amplitudeContrast=0.1,
            samplingRate=PIXEL, doseInitial=0, dosePerFrame=3.0, tiltAxisAngle=0.0))

    @classmethod
    def importImod(cls):
        from localet_scipion.protocols import ProtLocaletImportTs
        return cls._run("importImod", lambda: cls.newProtocol(
            ProtLocaletImportTs, filesPath=cls.imod, filesPattern="*.st",
            excludedViews="TS_B: 3,17", dosePerTilt=3.0))

    @classmethod
    def importTruth(cls):
        from tomo.protocols import ProtImportTomograms
        return cls._run("importTruth", lambda: cls.newProtocol(
            ProtImportTomograms, filesPath=cls.truth, filesPattern="{TS}.mrc", samplingRate=PIXEL))

    @classmethod
    def reconstruct(cls, key, tsProt, model=None, **kwargs):
        from localet_scipion.protocols import ProtLocaletReconstruct

        def make():
            prot = cls.newProtocol(ProtLocaletReconstruct, thickness=THICKNESS, useGpu=False,
                                   **kwargs)
            prot.inputSetOfTiltSeries.set(tsProt)
            prot.inputSetOfTiltSeries.setExtended("TiltSeries" if hasattr(tsProt, "TiltSeries")
                                                  else "outputTiltSeries")
            if model is not None:
                prot.inputModel.set(model)
                prot.inputModel.setExtended("Model")
            return prot
        return cls._run(key, make)

    @classmethod
    def wbpPlain(cls):
        return cls.reconstruct("wbpPlain", cls.importPlain(), method=METHOD_WBP)

    @classmethod
    def wbpHalves(cls):
        return cls.reconstruct("wbpHalves", cls.importImod(), method=METHOD_WBP, doOddEven=True)

    # ------------------------------------------------------------------ helpers
    def _tomos(self, prot):
        return {t.getTsId(): t.clone() for t in prot.Tomograms.iterItems()}

    def _cliVolume(self, name, stack, tlt, *extra):
        out = os.path.join(ROOT, f"cli_{name}.mrc")
        _cli("fbp", stack, "--tlt", tlt, "--thickness", THICKNESS, *extra, "-o", out)
        return _read(out)

    # ------------------------------------------------------------------ checks
    def test_plugin_discovered_and_children_use_this_checkout(self):
        from pwem import Domain
        module = Domain.getPluginModule("localet_scipion")
        self.assertEqual(os.path.dirname(module.__file__), os.path.join(scipion_env.REPO, "localet_scipion"))
        self.assertTrue(issubclass(module.Plugin, __import__("pwem").Plugin))
        for name in ("ProtLocaletReconstruct", "ProtLocaletTrain", "ProtLocaletFsc",
                     "ProtLocaletImportModel", "ProtLocaletImportTs", "ProtLocaletFinetune"):
            self.assertIn(name, Domain.getProtocols())
        self.assertIn("LocaletModel", Domain.getObjects())
        self.assertNotIn("torch", sys.modules.get("localet_scipion.protocols").__dict__)
        # the protocol's child process logged where it imported the plugin from
        log = open(self.wbpPlain().getStdoutLog()).read()
        self.assertIn(f"localet plugin at {os.path.join(scipion_env.REPO, 'localet_scipion')}", log)
        self.assertIn("-m localet fbp", log)  # the command is logged

    def test_protocol_list_hides_the_base(self):
        """The boxes the GUI offers (its search and 'all protocols' view keep the classes that
        pass isAFinalProtocol) are the six localet boxes; the base class is not among them."""
        from pwem import Domain
        from pyworkflow.gui.project.utils import isAFinalProtocol

        from localet_scipion.protocols.protocol_base import ProtLocaletBase
        protocols = Domain.getProtocols()
        ours = {k: v for k, v in protocols.items() if v.__module__.startswith("localet_scipion.")}
        offered = sorted(k for k, v in ours.items() if isAFinalProtocol(v, k))
        self.assertEqual(offered, ["ProtLocaletFinetune", "ProtLocaletFsc", "ProtLocaletImportModel",
                                   "ProtLocaletImportTs", "ProtLocaletReconstruct", "ProtLocaletTrain"])
        self.assertNotIn("ProtLocaletBase", protocols)
        self.assertTrue(ProtLocaletBase.isBase())
        names = " ".join(f"{k} {ours[k].getClassLabel()}".lower() for k in offered)
        self.assertNotIn("protlocaletbase", names)
        self.assertNotIn("none", names)

    def test_plugin_import_is_torch_free(self):
        """Every protocol subprocess of a Scipion project imports the plugins: no torch there."""
        code = ("import sys, localet_scipion, localet_scipion.protocols, localet_scipion.objects, "
                "localet_scipion.convert, localet_scipion.constants; print('torch' in sys.modules)")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             env=os.environ.copy())
        self.assertEqual(out.returncode, 0, out.stderr[-2000:])
        self.assertEqual(out.stdout.strip(), "False")

    def test_reconstruct_warns_outside_the_models_training_range(self):
        """The voxel-size warning comes from the model's card (the shipped model: 8-16 A)."""
        from localet_core.contracts.model_card import read_model_card, shipped_model_path, training_range
        from localet_scipion.protocols import ProtLocaletReconstruct
        lo, hi = training_range(read_model_card(shipped_model_path()))

        def warnings(**kwargs):
            prot = self.newProtocol(ProtLocaletReconstruct, thickness=THICKNESS, **kwargs)
            prot.inputSetOfTiltSeries.set(self.importPlain())
            prot.inputSetOfTiltSeries.setExtended("outputTiltSeries")
            return [w for w in prot.warnings() if "training range" in w]

        far = int(np.ceil(1.5 * hi / PIXEL))  # binned voxel well above the model's range
        self.assertEqual(warnings(method=METHOD_PRETRAINED, binning=1), [])
        (warning,) = warnings(method=METHOD_PRETRAINED, binning=far)
        self.assertIn(f"{far * PIXEL:g} A is outside the model's training range {lo:g}-{hi:g} A", warning)
        self.assertEqual(warnings(method=METHOD_WBP, binning=far), [])

    def test_wbp_from_tomo_import_equals_cli(self):
        prot = self.wbpPlain()
        tomos = self._tomos(prot)
        self.assertEqual(sorted(tomos), ["TS_01", "TS_02"])
        self.assertIsNone(getattr(prot, "FailedTiltSeries", None))
        self.assertAlmostEqual(prot.Tomograms.getSamplingRate(), PIXEL)
        for tsId, tomo in tomos.items():
            self.assertEqual(tomo.getDim(), (64, 48, THICKNESS))
            self.assertFalse(tomo.hasHalfMaps())
            x, y, z = tomo.getShiftsFromOrigin()
            self.assertAlmostEqual(x, -64 / 2 * PIXEL)
            f = self.files[tsId]
            expected = self._cliVolume(tsId, f["stack"], f["tlt"])
            np.testing.assert_array_equal(_read(tomo.getFileName()), expected)

    def test_aligned_excluded_halves_and_failure(self):
        prot = self.wbpHalves()
        tomos = self._tomos(prot)
        self.assertEqual(sorted(tomos), ["TS_A", "TS_B"])
        failed = [ts.getTsId() for ts in prot.FailedTiltSeries.iterItems()]
        self.assertEqual(failed, ["TS_bad"])
        self.assertIn("TS_bad", prot.failedMessages.get())
        self.assertTrue(prot.Tomograms.hasOddEven())
        # .xf from Scipion's transforms, applied inside localet
        inputs = json.load(open(prot._getExtraPath("TS_A", "TS_A_input.json")))
        self.assertTrue(inputs["xf"] and inputs["exclude"] is None)
        # the resample-once path is the CLI's --xf (tests/test_alignment.py: the same volume as
        # the aligned stack's): each of TS_A's commands (stack, odd, even) gets the .xf, and the
        # series without transforms gets none
        from localet_scipion.convert import quote
        commands = [line for line in open(prot.getStdoutLog()).read().splitlines() if "-m localet fbp" in line]
        b_inputs = json.load(open(prot._getExtraPath("TS_B", "TS_B_input.json")))
        a_lines = [line for line in commands if f"--tlt {quote(inputs['tlt'])}" in line]
        b_lines = [line for line in commands if f"--tlt {quote(b_inputs['tlt'])}" in line]
        self.assertEqual(len(a_lines), 3)
        self.assertTrue(all(f"--xf {quote(inputs['xf'])}" in line for line in a_lines), a_lines)
        self.assertEqual(len(b_lines), 3)
        self.assertFalse(any("--xf" in line for line in b_lines), b_lines)
        a = self.files["TS_A"]
        np.testing.assert_array_equal(_read(tomos["TS_A"].getFileName()),
                                      self._cliVolume("A", a["stack"], a["tlt"], "--xf", a["xf"]))
        odd, even = tomos["TS_A"].getHalfMaps(asList=True)
        self.assertTrue(odd.endswith("TS_A_odd.mrc") and even.endswith("TS_A_even.mrc"))
        np.testing.assert_array_equal(_read(odd), self._cliVolume("A_odd", a["odd"], a["tlt"], "--xf", a["xf"]))
        # excluded views (disabled tilt images) -> EXCLUDELIST 3,17
        b = self.files["TS_B"]
        self.assertEqual(json.load(open(prot._getExtraPath("TS_B", "TS_B_input.json")))["exclude"], "3,17")
        withExclusion = self._cliVolume("B", b["stack"], b["tlt"], "--exclude", "3,17")
        np.testing.assert_array_equal(_read(tomos["TS_B"].getFileName()), withExclusion)
        self.assertFalse(np.allclose(withExclusion, self._cliVolume("B_all", b["stack"], b["tlt"])))
        np.testing.assert_array_equal(_read(tomos["TS_B"].getHalfMaps(asList=True)[1]),
                                      self._cliVolume("B_even", b["even"], b["tlt"], "--exclude", "3,17"))
        for tomo in tomos.values():
            self.assertEqual(tomo.getDim(), (64, 48, THICKNESS))
            self.assertAlmostEqual(tomo.getSamplingRate(), PIXEL)

    def test_binning(self):
        prot = self.reconstruct("wbpBin2", self.importPlain(), method=METHOD_WBP, binning=2)
        tomo = prot.Tomograms.getFirstItem()
        self.assertEqual(tomo.getDim(), (32, 24, THICKNESS))
        self.assertAlmostEqual(prot.Tomograms.getSamplingRate(), 2 * PIXEL)
        with mrcfile.open(tomo.getFileName(), header_only=True) as m:
            self.assertAlmostEqual(float(m.voxel_size.x), 2 * PIXEL, places=3)

    def test_mirror_averaging_reaches_the_cli(self):
        """'Mirror averaging' = 4: the box runs `localet reconstruct --mirrors 4`, and its tomogram
        is the command's."""
        prot = self.reconstruct("mirrors4", self.importPlain(), method=METHOD_PRETRAINED,
                                mirrors=MIRROR_CHOICES.index("4"))
        self.assertIn("--mirrors 4", open(prot.getStdoutLog()).read())
        tomo = self._tomos(prot)["TS_01"]
        f = self.files["TS_01"]
        out = os.path.join(ROOT, "cli_mirrors4.mrc")
        _cli("reconstruct", f["stack"], "--tlt", f["tlt"], "--thickness", THICKNESS, "--mirrors", "4", "-o", out)
        np.testing.assert_allclose(_read(tomo.getFileName()), _read(out), rtol=0, atol=1e-5)

    def test_fsc_half_maps_and_reference(self):
        from localet_scipion.convert import fscCurve, fscResolutions
        from localet_scipion.protocols import ProtLocaletFsc

        halves = self.newProtocol(ProtLocaletFsc, mode=0)
        halves.inputTomograms.set(self.wbpHalves())
        halves.inputTomograms.setExtended("Tomograms")
        self.launchProtocol(halves)
        fscs = {f.getObjLabel(): f.clone() for f in halves.FSCs.iterItems()}
        self.assertEqual(sorted(fscs), ["TS_A", "TS_B"])
        x, y = fscs["TS_A"].getData()
        self.assertAlmostEqual(float(x[-1]), 1 / (2 * PIXEL), places=6)  # Nyquist, in 1/A
        self.assertGreater(float(y[0]), 0.5)
        # the same numbers as the CLI on the same half maps
        odd, even = self._tomos(self.wbpHalves())["TS_A"].getHalfMaps(asList=True)
        star = os.path.join(ROOT, "cli_fsc.star")
        subprocess.run([sys.executable, "-m", "localet", "fsc", odd, even, "--pixel-size", str(PIXEL),
                        "--tlt", "-60,60", "-o", star], check=True, capture_output=True)
        np.testing.assert_allclose(np.array(fscCurve(star)), np.array([list(map(float, x)), list(map(float, y))]))
        self.assertIn("TS_A: 0.143:", halves.resolutions.get())
        self.assertIn("inside the wedge", halves.resolutions.get())
        self.assertIn(f"{fscResolutions(star)['all']['0.143']:.1f} A", halves.summary()[0])

        ref = self.newProtocol(ProtLocaletFsc, mode=1)
        ref.inputTomograms.set(self.wbpHalves())
        ref.inputTomograms.setExtended("Tomograms")
        ref.referenceTomograms.set(self.importTruth())
        ref.referenceTomograms.setExtended("Tomograms")
        self.launchProtocol(ref)
        self.assertEqual(sorted(f.getObjLabel() for f in ref.FSCs.iterItems()), ["TS_A", "TS_B"])

    def test_import_model(self):
        from safetensors.numpy import save_file

        from localet_scipion.protocols import ProtLocaletImportModel

        path = os.path.join(ROOT, "tiny.safetensors")
        save_file({"w": np.zeros((2, 2), np.float32)}, path,
                  metadata={"card": json.dumps({"name": "tiny", "description": "test"})})
        prot = self.newProtocol(ProtLocaletImportModel, modelFile=path)
        self.launchProtocol(prot)
        self.assertEqual(prot.Model.getModelName(), "tiny")
        self.assertEqual(prot.Model.getCard()["description"], "test")
        self.assertTrue(os.path.exists(prot.Model.getFileName()))
        bad = os.path.join(ROOT, "bad.safetensors")
        open(bad, "w").write("not a model")
        self.assertTrue(self.newProtocol(ProtLocaletImportModel, modelFile=bad).validate())

    @unittest.skipIf(not _pretrained_shipped(), "`localet reconstruct` or its pretrained model is not "
                     "in this checkout yet; the WBP method is tested instead")
    def test_pretrained_with_halves_then_fsc(self):
        from localet_scipion.protocols import ProtLocaletFsc
        prot = self.reconstruct("pretrained", self.importImod(), method=METHOD_PRETRAINED, doOddEven=True)
        tomos = self._tomos(prot)
        self.assertEqual(sorted(tomos), ["TS_A", "TS_B"])
        a = self.files["TS_A"]
        out = os.path.join(ROOT, "cli_rec.mrc")
        _cli("reconstruct", a["stack"], "--tlt", a["tlt"], "--xf", a["xf"], "--thickness", THICKNESS,
             "--odd", a["odd"], "--even", a["even"], "-o", out)
        np.testing.assert_allclose(_read(tomos["TS_A"].getFileName()), _read(out), rtol=0, atol=1e-5)
        fsc = self.newProtocol(ProtLocaletFsc, mode=0)
        fsc.inputTomograms.set(prot)
        fsc.inputTomograms.setExtended("Tomograms")
        self.launchProtocol(fsc)
        self.assertEqual(fsc.FSCs.getSize(), 2)
        # the network's halves are judged by the prior-proof estimate the reconstruct run wrote,
        # the same figure the CLI gives on the same inputs
        from localet_core.contracts.naming import prior_proof_name
        from localet_scipion.convert import priorProofResolution

        self.assertIn("TS_A: prior-proof resolution", fsc.resolutions.get())
        self.assertIn(f"TS_A: prior-proof resolution {priorProofResolution(prior_proof_name(out))} ",
                      fsc.resolutions.get())
        labels = sorted(f.getObjLabel() for f in fsc.FSCs.iterItems())
        self.assertEqual(labels, ["TS_A (prior-proof C_est)", "TS_B (prior-proof C_est)"])

    @unittest.skipIf(not _cli_has("finetune"), "`localet finetune` is not in this checkout yet")
    def test_finetune_for_a_specimen_from_an_imported_map(self):
        """The box simulates the first tilt series' acquisition (pixel size x binning, angles
        without its excluded views, dose per tilt x views) with the imported map, whose sampling
        rate Scipion knows (its header has none), and outputs the fine-tuned model."""
        from pwem.protocols import ProtImportVolumes

        from localet_core.simulate.templates import load_template
        from localet_scipion.protocols import ProtLocaletFinetune

        data, pixel = load_template("4v1w")
        folder = os.path.join(ROOT, "map")
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, "apof.mrc")
        with mrcfile.new(path, overwrite=True) as m:
            m.set_data(np.ascontiguousarray(data, dtype=np.float32))  # no pixel size in its header
        imported = self.newProtocol(ProtImportVolumes, filesPath=folder, filesPattern="apof.mrc",
                                    samplingRate=pixel)
        self.launchProtocol(imported)
        prot = self.newProtocol(ProtLocaletFinetune, binning=2, steps=6, count=2, useGpu=False,
                                extraArgs="--shape 24,32,32")
        prot.inputSetOfTiltSeries.set(self.importImod())
        prot.inputSetOfTiltSeries.setExtended("TiltSeries")
        prot.inputMap.set(imported)
        prot.inputMap.setExtended("outputVolume")
        self.assertIn("TS_A (the first tilt series)", " ".join(prot.warnings()))
        self.launchProtocol(prot)
        card = prot.Model.getCard()
        self.assertEqual(card["pixel_size_A"], [2 * PIXEL])
        self.assertEqual(card["initialised_from"], "localet-default")
        angles = np.loadtxt(self.files["TS_A"]["tlt"])
        record = json.load(open(os.path.join(prot._outDir(), "simulations", "specimen_0.json")))["config"]
        self.assertEqual(record["voxel_size"], 2 * PIXEL)
        self.assertEqual(record["tilt_range"], [round(float(angles.min()), 3), round(float(angles.max()), 3)])
        self.assertAlmostEqual(record["dose"], 3.0 * len(angles))
        self.assertEqual(record["templates"], [prot._mapFile()])
        self.assertEqual(card["specimen"]["simulation"]["template_sha256"], record["template_sha256"])
        with mrcfile.open(prot._mapFile(), permissive=True) as copy, mrcfile.open(path) as original:
            self.assertEqual(float(copy.voxel_size.x), pixel)
            self.assertEqual(float(original.voxel_size.x), 0.0)  # the input is not written
        self.assertIn("-m localet finetune", open(prot.getStdoutLog()).read())

    @unittest.skipIf(not (_cli_has("train") and _cli_has("reconstruct")),
                     "`localet train`/`reconstruct` are not in this checkout yet")
    def test_train_then_reconstruct_with_trained_model(self):
        from localet_scipion.protocols import ProtLocaletReconstruct, ProtLocaletTrain
        train = self.newProtocol(ProtLocaletTrain, steps=20, useGpu=False)
        train.inputSetOfTiltSeries.set(self.importImod())
        train.inputSetOfTiltSeries.setExtended("TiltSeries")
        train.inputReferences.set(self.importTruth())
        train.inputReferences.setExtended("Tomograms")
        self.launchProtocol(train)
        self.assertEqual(sorted(train.Model.getTrainedOn()), ["TS_A", "TS_B"])
        # the transforms reach `localet train` as the pairs' xf column (resampled once by load_pair)
        from localet_core.contracts.pairs import read_pairs_star
        xfs = {os.path.basename(p.tlt): p.xf for p in read_pairs_star(train._pairsStar())}
        self.assertEqual(sorted(xfs), ["TS_A.tlt", "TS_B.tlt"])
        self.assertTrue(xfs["TS_A.tlt"].endswith(os.path.join("TS_A", "TS_A.xf")) and os.path.exists(xfs["TS_A.tlt"]))
        self.assertIsNone(xfs["TS_B.tlt"])
        # the voxel-size warning reads the trained model's own card (trained at PIXEL A)
        binned = self.newProtocol(ProtLocaletReconstruct, method=METHOD_TRAINED, thickness=THICKNESS,
                                  binning=2)
        binned.inputSetOfTiltSeries.set(self.importImod())
        binned.inputSetOfTiltSeries.setExtended("TiltSeries")
        binned.inputModel.set(train)
        binned.inputModel.setExtended("Model")
        self.assertIn(f"training range ({PIXEL:g} A only)", " ".join(binned.warnings()))
        rec = self.reconstruct("trained", self.importImod(), model=train, method=METHOD_TRAINED,
                               doOddEven=True)
        self.assertEqual(rec.Tomograms.getSize(), 2)
        self.assertEqual([ts.getTsId() for ts in rec.FailedTiltSeries.iterItems()], ["TS_bad"])
        for tomo in self._tomos(rec).values():
            self.assertEqual(tomo.getDim(), (64, 48, THICKNESS))
            self.assertTrue(all(os.path.exists(h) for h in tomo.getHalfMaps(asList=True)))
        a = self.files["TS_A"]
        out = os.path.join(ROOT, "cli_trained.mrc")
        _cli("reconstruct", a["stack"], "--tlt", a["tlt"], "--xf", a["xf"], "--thickness", THICKNESS,
             "--model", train.Model.getFileName(), "-o", out)
        np.testing.assert_allclose(_read(self._tomos(rec)["TS_A"].getFileName()), _read(out),
                                   rtol=0, atol=1e-5)

    def test_gpu_ids_reach_the_cli(self):
        """Use GPU = Yes: each tilt series' command gets --device cuda:<its thread's GPU>. On a
        machine without CUDA localet refuses it, every series fails and the box reports it."""
        from localet_scipion.protocols import ProtLocaletReconstruct
        prot = self.newProtocol(ProtLocaletReconstruct, method=METHOD_WBP, thickness=THICKNESS,
                                useGpu=True, gpuList="0")
        prot.inputSetOfTiltSeries.set(self.importPlain())
        prot.inputSetOfTiltSeries.setExtended("outputTiltSeries")
        try:
            self.launchProtocol(prot)
        except Exception:
            pass  # expected without a GPU
        prot = self.proj.getProtocol(prot.getObjId())  # as stored by the run
        log = open(prot.getStdoutLog()).read()
        self.assertIn("--device cuda:0", log)
        import torch
        if not torch.cuda.is_available():
            self.assertTrue(prot.isFailed())
            self.assertIn("localet failed on every tilt series", prot.getErrorMessage())
            self.assertEqual(prot.FailedTiltSeries.getSize(), 2)
